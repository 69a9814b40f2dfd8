"""dtf's live dashboard, a Bokeh server app: ``bokeh serve bokeh_app --args --broker EP --http URL``
from a checkout, or ``dtf-dashboard`` anywhere (it serves the installed package, ``dtf_dashboard``).

A package so that ``main.py`` can import its components; Bokeh runs this file once per server.
"""
