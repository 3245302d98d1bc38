"""Where promoted adapters go: the serving export, Hub publishing and the MLflow mirror."""
