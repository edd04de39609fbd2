# Stand-in for the voting app's Flask application.
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Cats vs Dogs\n"]
