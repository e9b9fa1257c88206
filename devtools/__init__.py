"""Developer tools above every app: the demo lab (`manage.py seed_demo`, demo settings only) and
the lab-scale data generator the benchmark runs on (`manage.py generate_lab`)."""
