// Stand-in for the web service.
const http = require('http');
const escape = require('escape-html');
http.createServer((req, res) => res.end('hello ' + escape(req.url) + '\n')).listen(5000);
