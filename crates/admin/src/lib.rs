//! The admin REST API (tenants, consumers, keys, approvals, analytics) and dashboard.
