"""Teachers whose episodes become the student's training data, and the pipeline that runs them."""
