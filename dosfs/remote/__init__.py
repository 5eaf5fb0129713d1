"""The remote tier (issue 12, work in progress, untested): publish a container to S3-compatible
storage (push.py) and read it through the pack-store seam (packstore.py). Imports obstore,
never pyfuse3 or trio."""
