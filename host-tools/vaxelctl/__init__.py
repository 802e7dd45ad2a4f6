"""vaxelctl: the installer's command line for Vaxelbox appliances."""
