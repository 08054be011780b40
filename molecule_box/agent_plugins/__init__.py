"""Agent plugins: the registry the box serves them from, the sources it fetches them from, and the one
pipeline that checks a plugin before it is installed into a workspace or downloaded by a remote agent.

Pure file and process work (no store, no actors): the API and the CLI hand it the settings it needs.
"""
