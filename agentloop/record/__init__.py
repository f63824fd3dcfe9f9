"""What a run leaves behind: the trajectory, redaction, the run log, reports and exports."""
