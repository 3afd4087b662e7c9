"""The SQLite mirror: its tables (`schema`), writes (`store`), the file's safety checks (`storage`), the KPI tables and the token store."""
