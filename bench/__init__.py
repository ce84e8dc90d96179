"""The quality benchmark (`hymirec bench quality`): datasets, methods, peers, scoring, report."""
