"""Scoring every arm of an adapter (baseline, candidates, controls) together, exactly as arm by arm would."""
