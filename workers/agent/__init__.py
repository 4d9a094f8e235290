"""The agent: fetch tasks from Stock_topic, publish bars to Stock_data_topic."""
