"""Training loops: the classifier (`classifier`) and the generator; they return metric dicts and never log."""
