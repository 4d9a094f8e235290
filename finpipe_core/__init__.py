"""The shared core: what the manager, the workers and the CLI all speak.

Settings, message contracts, the trading calendar, the task lifecycle, the database and its
migrations, Kafka client settings, dead letters and the indicator engine. It imports nothing of
finpipe's other packages, so every arrow points into it.
"""
