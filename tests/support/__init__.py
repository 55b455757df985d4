"""What the suites share: a private Airflow home, the settings of the emulator's accounts, the canned and
TLS servers, the real-components harness (``airflow_cluster``) and the services it installs."""
