"""Deploy targets. Only the local one exists: containers on this host behind an nginx edge."""
