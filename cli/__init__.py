"""The `ovt` command line: the top layer. It may import flows/ and the library; nothing imports it."""
