"""Cases: queues, SLA policies, cases and the commitments service makes on them."""
