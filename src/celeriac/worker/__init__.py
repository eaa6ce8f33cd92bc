"""The worker: consumer loop, pools, lease heartbeats, time limits and the supervisor."""
