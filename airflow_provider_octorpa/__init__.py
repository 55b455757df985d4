"""The distribution's own name, importable: Airflow 3.3 looks up a provider's example DAGs in the
module named after its distribution (``airflow-provider-octorpa`` -> ``airflow_provider_octorpa``),
in an ``example_dags`` folder beside this file, and logs an ERROR with a traceback where that module
does not exist. The provider's code is :mod:`airflow_octorpa`; its example DAGs need a connection
and the emulator (``make demo``), so they are not installed as Airflow examples: the folder is
absent on purpose, and Airflow adds no bundle for it.
"""
