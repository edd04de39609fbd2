# Stand-in gunicorn configuration.
bind = "0.0.0.0:80"
workers = 2
