"""The site model: users, phones, groups, schedules of one office, validated with exact places."""

from vaxelbox.site.loader import SiteError, demo_site, demo_site_text, load_site, parse_site, report_valid
from vaxelbox.site.model import Site

__all__ = ["Site", "SiteError", "demo_site", "demo_site_text", "load_site", "parse_site", "report_valid"]
