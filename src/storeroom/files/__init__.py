"""Files: uploaded bytes, their metadata, and how they are served back."""
