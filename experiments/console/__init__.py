"""
The product manager's console: pages over rollouts and their analyses; presentation only, reads
through selectors. Its charts (`charts`) are pure functions from plain numbers to SVG markup, so
they render on the server with no JavaScript, print as they are, and are tested without Django.
"""
