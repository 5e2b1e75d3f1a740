"""Docker-free local runtime: serves template.yaml's routes and triggers on an embedded AWS endpoint."""
