# Stand-in for the locust scenario.
import idna

TARGET = idna.encode("frontend")
