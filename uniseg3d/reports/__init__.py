"""Tables, plots, the HTML/Markdown report, prediction renders and PLY exports."""
