//! Silent refresh: a fresh access token rides back when the presented one nears expiry.
