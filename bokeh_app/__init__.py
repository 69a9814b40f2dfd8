"""dtf's live dashboard, a Bokeh server app: ``bokeh serve bokeh_app --args --broker EP --http URL``.

A package so that ``main.py`` can import its components; Bokeh runs this file once per server.
"""
