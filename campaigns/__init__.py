"""Campaigns: segments, campaigns, touches, and the contact policy that can hold them."""
