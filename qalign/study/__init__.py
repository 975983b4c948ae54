"""`qalign study`: one command runs every method on one model and data, and writes a report with CIs."""
