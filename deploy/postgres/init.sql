-- Run once by the postgres image entrypoint (/docker-entrypoint-initdb.d) on an empty data
-- directory, as the superuser. One role and one database per service; each service owns its
-- database (and so, since PostgreSQL 15, its public schema) and can reach no other.
-- Passwords are development defaults matching docker-compose.yml and deploy/k8s.

CREATE ROLE activity LOGIN PASSWORD 'activity';
CREATE ROLE points   LOGIN PASSWORD 'points';
CREATE ROLE merchant LOGIN PASSWORD 'merchant';
CREATE ROLE gateway  LOGIN PASSWORD 'gateway';

CREATE DATABASE activity OWNER activity ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE points   OWNER points   ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE merchant OWNER merchant ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE gateway  OWNER gateway  ENCODING 'UTF8' TEMPLATE template0;

REVOKE CONNECT, TEMPORARY ON DATABASE activity FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE points   FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE merchant FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE gateway  FROM PUBLIC;
