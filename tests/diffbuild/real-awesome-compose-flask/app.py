# Stand-in for the Flask app.
import click


@click.command()
def main():
    click.echo("Hello World!")


if __name__ == "__main__":
    main()
