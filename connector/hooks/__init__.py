"""The webhook receiver (`crm-connector serve`): the CRMs' change notifications in, a refresh of
the records they name and of their clients' KPIs out (`receiver`, `debounce`, `service`)."""
