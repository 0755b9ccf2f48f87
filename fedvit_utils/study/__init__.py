"""The study: numbered notebooks that reproduce the paper, each writing its own artefacts.

run       one run folder: each artefact's writer (a notebook) and its readers
runner    `make study`: every notebook in order with papermill
table1    the paper's Table 1 beside ours
figures   the figures (partitions, accuracy curves, Figure 2, key kinds, attacks)
reports   tables as CSV + Markdown, figures as PNG
book      `make book`: the executed notebooks and docs/ as a static HTML site
"""
