"""The identity service: one customer across email, phone, WhatsApp and the web form."""
