"""Evaluation as the SeqGPT paper scores: a model's answers to atomic-task records (decoded as
the components decode), micro-F1 and ROUGE per dataset and task, span F1, reports and plots."""
