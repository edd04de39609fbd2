# Stand-in for the Flask app.
from itsdangerous import URLSafeSerializer

print(URLSafeSerializer("secret").dumps({"hello": "world"}))
