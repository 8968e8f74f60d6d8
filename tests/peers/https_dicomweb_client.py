"""The Python dicomweb-client over HTTPS, for tests/tls.rs.

Usage: https_dicomweb_client.py DICOMWEB_URL AUTHORIZATION
    Searches for studies (requests verifies the node against REQUESTS_CA_BUNDLE) and prints
    "studies: N".
"""

import sys

from dicomweb_client.api import DICOMwebClient


def main():
    url, authorization = sys.argv[1:3]
    client = DICOMwebClient(url=url, headers={"Authorization": authorization})
    print(f"studies: {len(client.search_for_studies())}")


if __name__ == "__main__":
    main()
