"""The long-running process: monitors into one queue, a dispatcher, the scheduler."""
