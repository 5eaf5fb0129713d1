"""The remote tier: publish a container to S3-compatible storage (push.py), read it through the
pack-store seam (packstore.py) as RemoteContainer, pull it, and serve it read-only to the mount
(engine.py). Imports obstore, never pyfuse3 or trio."""
