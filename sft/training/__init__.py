"""Training: the recipe configuration, the training run, what each method trains, the loss, progress and
plots."""
