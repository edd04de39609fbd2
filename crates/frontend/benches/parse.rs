//! Parser throughput on a very large Dockerfile (about 10 MB, 100k lines).
//! Run with `cargo bench -p kiln-frontend`; prints the median of 5 runs.

use std::time::{Duration, Instant};

use kiln_frontend::{parser, stages};

fn big_dockerfile() -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\n");
    let mut stage = 0;
    while s.len() < 10 * 1024 * 1024 {
        s.push_str(&format!("FROM ${{BASE}} AS s{stage}\n"));
        for i in 0..40 {
            s.push_str(&format!(
                "ENV KEY_{i}=\"value {i} with some words\" OTHER_{i}=${{KEY_{i}}}/bin\n\
                 RUN --mount=type=cache,target=/root/.cache/{i} set -e; \\\n    echo step {i} \\\n    && ls -la /usr/lib/{i}\n\
                 COPY --chown=1000:1000 --chmod=0644 src/{i}/*.txt /app/{i}/\n\
                 LABEL org.example.step{i}=\"step {i}\"\n"
            ));
        }
        s.push_str("RUN <<EOF\nset -e\necho heredoc body line one\necho line two\nEOF\nCMD [\"/app/run\", \"--flag\"]\n");
        stage += 1;
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let src = big_dockerfile();
    let lines = src.lines().count();
    let mut parse_times = Vec::new();
    let mut plan_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let df = parser::parse(&src).expect("benchmark Dockerfile parses");
        parse_times.push(t.elapsed());
        let t = Instant::now();
        let opts = stages::BuildOptions::for_platform(stages::PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
        });
        stages::plan(&df, &opts).expect("benchmark Dockerfile plans");
        plan_times.push(t.elapsed());
    }
    let p = median(parse_times);
    let mb = src.len() as f64 / 1e6;
    println!(
        "parse: {:.1} MB, {lines} lines: median {:.1} ms ({:.0} MB/s)",
        mb,
        p.as_secs_f64() * 1e3,
        mb / p.as_secs_f64()
    );
    println!(
        "parse + typed instructions + stage plan: median {:.1} ms (plan only)",
        median(plan_times).as_secs_f64() * 1e3
    );
}
