# Stand-in for the backend.
import idna
import six

print(six.text_type(idna.encode("example.com")))
