"""Items: the catalog each user keeps."""
