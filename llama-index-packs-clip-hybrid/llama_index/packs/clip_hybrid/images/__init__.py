"""Images: finding them, reading their bytes (files, nodes, URLs), and decoding them safely."""
