"""CryoSPARC login users as its Meteor-based accounts store them in the ``users`` collection.

What this relies on (read with the search tool; say so when it changes):

- Meteor's ``accounts-password`` package (``password_server.js``): a plaintext password is first
  turned into the lowercase hex SHA-256 digest of its UTF-8 bytes (``getPasswordString``:
  ``SHA256(password)``), and that 64-character string is hashed with bcrypt at
  ``Accounts._bcryptRounds()`` = 10 rounds; the result is stored at
  ``services.password.bcrypt``. Login recomputes ``bcrypt.compare(SHA256(password), stored)``.
- Meteor accounts store addresses as ``emails: [{address, verified}]`` and ids as 17
  characters from Meteor's "unmistakable" alphabet (``Random.id()``), ``createdAt`` a date.
- cryosparc-tools' ``cryosparc.models.user.User`` (the documented shape of a CryoSPARC
  user): ``emails[].address``/``verified``, ``services.password.bcrypt``, ``name``,
  ``first_name``, ``last_name``, ``created_at``, and a ``role`` of "user" or "admin".
  ``username`` is the login name ``cryosparcm createuser --username`` sets.

Users are matched by email, case-insensitively (as CryoSPARC and oSPARC merge them).
Nothing here logs or returns a password; the bcrypt value itself is never planned either.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from reconciler.providers.cryosparc.model import PROJECTS, USERS

BCRYPT_ROUNDS = 10  # Accounts._bcryptRounds() default
# Meteor's Random.id() alphabet (packages/random: UNMISTAKABLE_CHARS) and length.
METEOR_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
METEOR_ID_LENGTH = 17
# The fields reconciler reconciles on an existing user (never the password).
MANAGED_FIELDS = ("name", "first_name", "last_name", "role")


def meteor_password_hash(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """``services.password.bcrypt`` for ``password``: bcrypt over the hex SHA-256 digest, as
    Meteor's accounts-password computes it."""
    import bcrypt

    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    return bcrypt.hashpw(digest.encode("ascii"), bcrypt.gensalt(rounds)).decode("ascii")


def meteor_password_matches(password: str, stored: str) -> bool:
    """What a Meteor login checks: bcrypt(SHA-256 hex of ``password``) against ``stored``."""
    import bcrypt

    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    try:
        return bool(bcrypt.checkpw(digest.encode("ascii"), stored.encode("ascii")))
    except ValueError:
        return False


def meteor_id(seed: str) -> str:
    """A Meteor-style id (17 characters of the unmistakable alphabet) derived from ``seed``:
    the same user gets the same id on every attempt, so a create that was killed after its
    insert is found again, never inserted twice."""
    number = int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest(), "big")
    characters = []
    for _ in range(METEOR_ID_LENGTH):
        number, index = divmod(number, len(METEOR_ID_ALPHABET))
        characters.append(METEOR_ID_ALPHABET[index])
    return "".join(characters)


def emails_of(document: dict[str, Any]) -> list[str]:
    """The addresses of a user document, lowercased."""
    found = []
    for item in document.get("emails") or []:
        if isinstance(item, dict) and isinstance(item.get("address"), str):
            found.append(item["address"].strip().lower())
    return found


def role_of(document: dict[str, Any]) -> str:
    """A user's role: ``role``, or "admin" when Meteor roles list it."""
    role = document.get("role")
    if role in ("user", "admin"):
        return str(role)
    roles = document.get("roles")
    if isinstance(roles, dict) and "admin" in (roles.get("__global_roles__") or []):
        return "admin"
    return "admin" if document.get("admin") is True else "user"


def user_document(*, instance_id: str, email: str, username: str, first_name: str, last_name: str, role: str,
                  password_bcrypt: str, now: datetime | None = None) -> dict[str, Any]:
    """The document of a new user, as CryoSPARC's accounts write it (see the module docstring)."""
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    name = " ".join(part for part in (first_name, last_name) if part)
    return {
        "_id": meteor_id(f"{instance_id}\0{email.strip().lower()}"),
        "createdAt": created,
        "created_at": created,
        "emails": [{"address": email.strip(), "verified": False}],
        "services": {"password": {"bcrypt": password_bcrypt}},
        "username": username,
        "name": name,
        "first_name": first_name,
        "last_name": last_name,
        "profile": {"name": name},
        "role": role,
    }


def list_users(db: Any) -> list[dict[str, Any]]:
    """Every user document (without password services), in email order."""
    users = [dict(item) for item in db[USERS].find({}, {"services": 0})]
    return sorted(users, key=lambda item: (emails_of(item) or [""])[0])


def find_user(db: Any, email: str) -> dict[str, Any] | None:
    """The user whose addresses include ``email`` (case-insensitively), without services."""
    wanted = email.strip().lower()
    for user in list_users(db):
        if wanted in emails_of(user):
            return user
    return None


def owned_projects(db: Any, user_id: Any) -> list[str]:
    """uids of the projects (not deleted) ``user_id`` owns, in uid order."""
    from reconciler.providers.cryosparc.model import uid_number

    found = [str(item["uid"]) for item in db[PROJECTS].find({"owner_user_id": user_id, "deleted": {"$ne": True}},
                                                             {"uid": 1})]
    return sorted(found, key=uid_number)


def insert_user(db: Any, document: dict[str, Any]) -> bool:
    """Insert ``document`` unless a user with its id or email exists. Returns True when inserted."""
    from pymongo.errors import DuplicateKeyError

    for address in emails_of(document):
        if find_user(db, address) is not None:
            return False
    try:
        db[USERS].insert_one(dict(document))
    except DuplicateKeyError:
        return False
    return True


def update_user(db: Any, user_id: Any, changes: dict[str, Any]) -> None:
    """Set ``changes`` (only MANAGED_FIELDS) on the user ``user_id``; ``name`` also sets the profile's."""
    values = {key: value for key, value in changes.items() if key in MANAGED_FIELDS}
    if "name" in values:
        values["profile.name"] = values["name"]
    if values:
        db[USERS].update_one({"_id": user_id}, {"$set": values})


def remove_user(db: Any, user_id: Any) -> bool:
    """Remove the user ``user_id``. Returns False when it was already gone."""
    return bool(db[USERS].delete_one({"_id": user_id}).deleted_count)
