"""Video synthesis from a still portrait."""
