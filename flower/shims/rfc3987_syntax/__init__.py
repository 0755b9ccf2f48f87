"""Stand-in that makes `import rfc3987_syntax` fail at once in Flower's processes (Ray's agents and workers).

Every Ray process imports jsonschema, which imports rfc3987-syntax when it is installed (Jupyter's
jsonschema extras install it); that import compiles a grammar: 3 s of CPU per process on the 2-core
machine of the README, enough under load for Ray's raylet to give up waiting for its agents (its own
fixed timeout). jsonschema treats the missing module as "format not checked", which nothing here uses.
`fedvit_flower.launch.flower_env` puts this folder first on PYTHONPATH for the processes it starts.
"""

raise ImportError("rfc3987_syntax is masked for Flower/Ray processes (see flower/shims/rfc3987_syntax)")
