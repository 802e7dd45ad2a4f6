"""The site model: users, phones, groups, schedules of one office, validated with exact places."""

from vaxelbox.site.loader import SiteError, check_site_file, demo_site, demo_site_text, load_site, parse_site
from vaxelbox.site.model import Site

__all__ = ["Site", "SiteError", "check_site_file", "demo_site", "demo_site_text", "load_site", "parse_site"]
