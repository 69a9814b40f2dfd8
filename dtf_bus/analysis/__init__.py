"""What the results store says about runs: compare two, find flaky tests, follow one test.

``outcomes``, ``stats``, ``compare`` and ``flaky`` are pure functions over rows (unit-tested
without a database); ``queries`` reads those rows from DuckDB through a cursor; ``requests``
turns a client's QUERY message (or an API request) into one of those reads, arguments checked.
"""
