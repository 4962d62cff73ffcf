"""Plotly figures used by the lessons and the widgets, one module per part of the course."""
