"""Code shipping: the archive format and its client, broker and worker sides."""
