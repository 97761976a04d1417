"""The spaCy components; each module registers its factory when imported."""
