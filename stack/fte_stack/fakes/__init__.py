"""Local fakes of external SaaS APIs, faked only at the HTTP boundary so the real SDKs run."""
