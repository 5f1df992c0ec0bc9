"""Legacy capture and rendering: RFC 6121 / XEP-0045 stanzas to and from node operations."""
